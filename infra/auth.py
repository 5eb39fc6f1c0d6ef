"""The optional Cognito user pool (`-c auth=cognito`): one for all services, in the shared stack.

Its ARN goes to an SSM parameter that service stacks resolve at deploy time, so the pool can be
replaced without CloudFormation exports pinning it.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra import naming
from infra.stages import StageSettings


class UserPool(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageSettings) -> None:
        super().__init__(scope, construct_id)
        self.pool = cognito.UserPool(
            self,
            "Pool",
            user_pool_name=f"{naming.prefix(stage.name)}-users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            deletion_protection=stage.deletion_protection,
            removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
        )
        self.client = self.pool.add_client("AppClient", auth_flows=cognito.AuthFlow(user_srp=True))
        ssm.StringParameter(
            self,
            "ArnParameter",
            parameter_name=naming.user_pool_arn_parameter(stage.name),
            string_value=self.pool.user_pool_arn,
        )

    @staticmethod
    def lookup(scope: Construct, construct_id: str, *, stage: StageSettings) -> cognito.IUserPool:
        arn = ssm.StringParameter.value_for_string_parameter(
            scope, naming.user_pool_arn_parameter(stage.name)
        )
        return cognito.UserPool.from_user_pool_arn(scope, construct_id, arn)
