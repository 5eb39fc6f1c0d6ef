"""A service's REST API: the topology's routes to the service's API function.

Unknown routes and methods must still answer the JSON 404/405 of docs/api.md, so every resource
on the route tree also has `ANY` (the function answers 405 or 404) and every resource without a
variable child gets a `{proxy+}` child (404). Responses API Gateway makes itself (authorization,
throttling, body validation, integration failures) are shaped as JSON `{"error", "message"}`.
"""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from eventstack.topology import Service
from infra import naming
from infra.functions import ServiceFunction, retention
from infra.stages import StageSettings

BODY_METHODS = frozenset({"POST", "PATCH", "PUT"})

# Gateway-made responses -> the contract's error codes. The status codes stay API Gateway's own.
GATEWAY_ERRORS: dict[str, str] = {
    "BAD_REQUEST_BODY": "bad_request",
    "BAD_REQUEST_PARAMETERS": "bad_request",
    "UNSUPPORTED_MEDIA_TYPE": "bad_request",
    "REQUEST_TOO_LARGE": "payload_too_large",
    "MISSING_AUTHENTICATION_TOKEN": "forbidden",
    "INVALID_SIGNATURE": "forbidden",
    "EXPIRED_TOKEN": "forbidden",
    "ACCESS_DENIED": "forbidden",
    "UNAUTHORIZED": "unauthorized",
    "THROTTLED": "throttled",
    "QUOTA_EXCEEDED": "throttled",
    "DEFAULT_4_XX": "client_error",
    "DEFAULT_5_XX": "unavailable",
}

ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "extendedRequestId": "$context.extendedRequestId",
        "ip": "$context.identity.sourceIp",
        "caller": "$context.identity.caller",
        "user": "$context.identity.user",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "resourcePath": "$context.resourcePath",
        "path": "$context.path",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
        "responseLatency": "$context.responseLatency",
        "integrationLatency": "$context.integrationLatency",
        "errorMessage": "$context.error.message",
        "xrayTraceId": "$context.xrayTraceId",
    }
)


def _route_tree(service: Service) -> tuple[list[str], dict[str, set[str]]]:
    """Every resource path on the way to a route (root included), and the methods declared on each."""
    paths = ["/"]
    methods: dict[str, set[str]] = {}
    for route in service.routes:
        parts = [p for p in route.resource.split("/") if p]
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            if path not in paths:
                paths.append(path)
        methods.setdefault(route.resource, set()).add(route.method)
    return paths, methods


class ServiceApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        service: Service,
        function: ServiceFunction,
        user_pool: cognito.IUserPool | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.authorization = stage.auth
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention(stage.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
        )
        if stage.auth == "cognito":
            if user_pool is None:
                raise ValueError("auth=cognito needs the shared user pool")
            authorizer = apigw.CognitoUserPoolsAuthorizer(self, "Authorizer", cognito_user_pools=[user_pool])
            method_options = apigw.MethodOptions(
                authorization_type=apigw.AuthorizationType.COGNITO, authorizer=authorizer
            )
        else:
            method_options = apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM)
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=naming.api(stage.name, service.name),
            description=f"eventstack {service.name} API ({stage.name})",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,  # the account-level role lives in the shared stack
            default_method_options=method_options,
            deploy_options=apigw.StageOptions(
                stage_name=stage.name,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel[stage.api_execution_log_level],
                data_trace_enabled=False,  # never log request or response bodies
                throttling_rate_limit=stage.throttle_rate,
                throttling_burst_limit=stage.throttle_burst,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(ACCESS_LOG_FORMAT),
            ),
        )
        self.validator = self.rest_api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        # Only "the body is a JSON object": field rules are the function's (422 with details).
        self.json_object = self.rest_api.add_model(
            "JsonObject",
            content_type="application/json",
            schema=apigw.JsonSchema(schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT),
        )
        # One invoke permission for the whole API instead of one (or two) per method.
        integration = apigw.LambdaIntegration(function.function, scope_permission_to_method=False)
        self._add_routes(service, integration)
        self._add_gateway_responses()
        CfnOutput(self, "Url", value=self.rest_api.url, description=f"{service.name} API base URL")

    def _add_routes(self, service: Service, integration: apigw.LambdaIntegration) -> None:
        paths, declared = _route_tree(service)
        for path in paths:
            resource = self.rest_api.root.resource_for_path(path)
            for method in sorted(declared.get(path, ())):
                params = {
                    f"method.request.path.{p[1:-1]}": True for p in path.split("/") if p.startswith("{")
                }
                resource.add_method(
                    method,
                    integration,
                    request_validator=self.validator,
                    request_parameters=params or None,
                    request_models={"application/json": self.json_object} if method in BODY_METHODS else None,
                )
            resource.add_method("ANY", integration)  # undeclared methods: the function answers 405/404
            children = [
                p for p in paths if p != path and p.rsplit("/", 1)[0] == (path if path != "/" else "")
            ]
            if not any(child.rsplit("/", 1)[1].startswith("{") for child in children):
                resource.add_resource("{proxy+}").add_method("ANY", integration)

    def _add_gateway_responses(self) -> None:
        for response_type, code in GATEWAY_ERRORS.items():
            self.rest_api.add_gateway_response(
                f"Gateway{response_type.title().replace('_', '')}",
                type=getattr(apigw.ResponseType, response_type),
                response_headers={"X-Correlation-Id": "context.requestId"},
                templates={
                    "application/json": f'{{"error": "{code}", "message": $context.error.messageString}}'
                },
            )


class ApiGatewayAccount(Construct):
    """The region's one API Gateway CloudWatch role (needed for execution logs): shared, set once."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "CloudWatchRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AmazonAPIGatewayPushToCloudWatchLogs"
                )
            ],
        )
        self.account = apigw.CfnAccount(self, "Account", cloud_watch_role_arn=self.role.role_arn)
