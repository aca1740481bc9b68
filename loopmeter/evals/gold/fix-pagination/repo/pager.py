"""Split a list into pages."""


def paginate(items, page, per_page):
    """Return the items on `page` (1-based), `per_page` items a page."""
    start = page * per_page
    return list(items[start:start + per_page])


def page_count(items, per_page):
    return (len(items) + per_page - 1) // per_page
