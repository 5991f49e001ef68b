"""The REST API under /api/v1/ (docs/api.md): the pieces every endpoint builds on.

- `scopes`: what a token may be used for, and which roles may hold which scope;
- `tokens`: the token text, its digest and its parsing;
- `authentication`: `Authorization: Bearer <token>` (and the registry's login session);
- `permissions.HasScope`: a view names the scope it needs (`required_scope`);
- `errors`: the one error body of every API response with a status of 400 or more;
- `middleware`: the request id of every response, and the error body for what Django answers
  under /api/ itself (unknown paths, server errors, bodies too large);
- `schema`: `error_responses(...)` for `@extend_schema`, the bearer security scheme;
- `pagination`: the default page-number pagination and its page size limits;
- `views` and `urls`: `me/`, the OpenAPI schema and its Swagger UI.

An endpoint is a thin DRF view: it declares `required_scope`, validates input with a nested
Input serializer, calls one selector or service, and documents every status it can return
with `@extend_schema(responses={200: Output, **error_responses(400, 401, 403)})`. Domain errors
(registry.errors) raised by services become the error body without any code in the view.
"""

# Every path under this prefix answers errors with the error body (registry.api.middleware).
API_PATH_PREFIX = "/api/"
