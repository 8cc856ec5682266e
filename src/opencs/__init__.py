"""opencs: an open-source, self-hostable Container Service (Alibaba Cloud CS API 2015-12-15)."""

__version__ = "0.1.0"
API_VERSION = "2015-12-15"
