"""The API's default pagination (DEFAULT_PAGINATION_CLASS): `?page=N&page_size=M`.

Every list endpoint answers `{"count", "next", "previous", "results"}`. A page past the end is
a 404 in the error body.
"""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination

# Rows per page unless the caller asks for another size, and the most it may ask for.
API_PAGE_SIZE = 50
API_PAGE_SIZE_MAX = 500


class ApiPagination(PageNumberPagination):
    page_size = API_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = API_PAGE_SIZE_MAX
