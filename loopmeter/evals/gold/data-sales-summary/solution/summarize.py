"""Summarise a sales CSV by region: python3 summarize.py sales.csv summary.json"""

import csv
import json
import sys
from collections import defaultdict


def summarize(rows):
    regions = defaultdict(lambda: {"units": 0, "revenue": 0.0})
    by_product = defaultdict(int)
    skipped = 0
    for row in rows:
        region = (row.get("region") or "").strip()
        try:
            units = int(row["units"])
            price = float(row["unit_price"])
        except (KeyError, TypeError, ValueError):
            skipped += 1
            continue
        if not region:
            skipped += 1
            continue
        regions[region]["units"] += units
        regions[region]["revenue"] += units * price
        by_product[row["product"]] += units
    for data in regions.values():
        data["revenue"] = round(data["revenue"], 2)
    top = min(by_product, key=lambda p: (-by_product[p], p)) if by_product else None
    return {"regions": dict(regions), "top_product": top, "skipped_rows": skipped}


def main(argv):
    src, dst = argv[1], argv[2]
    with open(src, newline="") as f:
        summary = summarize(csv.DictReader(f))
    with open(dst, "w") as f:
        json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
