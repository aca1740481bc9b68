"""Split a list into pages."""


def paginate(items, page, per_page):
    """Return the items on `page` (1-based), `per_page` items a page."""
    if page < 1 or per_page < 1:
        raise ValueError("page and per_page must be >= 1")
    start = (page - 1) * per_page
    return list(items[start:start + per_page])


def page_count(items, per_page):
    return (len(items) + per_page - 1) // per_page
