"""Invoice lines with VAT."""

from shop.tax import apply_tax, rate_for


def invoice_line(description, net_cents, category="default"):
    return {"description": description, "net": net_cents, "gross": apply_tax(net_cents, category),
            "rate": rate_for(category)}
