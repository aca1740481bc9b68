"""Invoice lines with VAT."""

VAT_RATES = {"food": 7, "books": 7, "default": 19}


def invoice_line(description, net_cents, category="default"):
    rate = VAT_RATES.get(category, VAT_RATES["default"])
    gross = (net_cents * (100 + rate) + 50) // 100
    return {"description": description, "net": net_cents, "gross": gross, "rate": rate}
