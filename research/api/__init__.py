"""The data-use committee over the REST API (docs/api.md, "Data requests and releases").

`views` holds thin DRF views (each declares its scope, validates a nested Input, calls one
selector or service of research/, answers with an Output); `serializers` holds the inputs and
outputs several views share. URLs: research/api_urls.py, included under /api/v1/.
"""
