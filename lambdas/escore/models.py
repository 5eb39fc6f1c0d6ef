"""The base classes of a service's HTTP models, so every service declares them the same way.

- `Body`: a request body. Strict: a field the model does not declare is a 422, never ignored
  (a typo in a client's field name must not pass as "not given").
- `Answer`: a response model (the OpenAPI document and the answer check read it).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    pass
