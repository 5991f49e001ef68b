"""The partner API's risk-model endpoints under /api/v1/models/ (docs/partner-api-scoring.md)."""
