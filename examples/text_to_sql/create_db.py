"""Create the text-to-SQL example's database: a small shop (customers, products, orders).

    python examples/text_to_sql/create_db.py [PATH]     (default: examples/text_to_sql/shop.db)

The data is generated from a fixed seed, so every run builds the same database.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from datetime import date, timedelta
from pathlib import Path

DEFAULT = Path(__file__).with_name("shop.db")
CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Accra", "Hanoi"]
PRODUCTS = [
    ("Tide chart", "books", 12.5),
    ("Sea kayak", "boats", 899.0),
    ("Paddle", "boats", 79.0),
    ("Dry bag", "gear", 24.0),
    ("Compass", "gear", 35.0),
    ("Sailing guide", "books", 29.0),
]


def create(path: Path) -> Path:
    """Write the database at `path` (replacing one that is there) and return the path."""
    path.unlink(missing_ok=True)
    rng = random.Random(20261130)
    db = sqlite3.connect(path)
    with db:
        db.executescript(
            """
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL);
            CREATE TABLE products (
                id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
                price REAL NOT NULL
            );
            CREATE TABLE orders (
                id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                product_id INTEGER NOT NULL REFERENCES products(id),
                quantity INTEGER NOT NULL, ordered_on TEXT NOT NULL
            );
            """
        )
        db.executemany(
            "INSERT INTO customers (name, city) VALUES (?, ?)",
            [(f"Customer {i}", CITIES[i % len(CITIES)]) for i in range(1, 41)],
        )
        db.executemany("INSERT INTO products (name, category, price) VALUES (?, ?, ?)", PRODUCTS)
        start = date(2026, 1, 1)
        db.executemany(
            "INSERT INTO orders (customer_id, product_id, quantity, ordered_on) VALUES (?,?,?,?)",
            [
                (
                    rng.randint(1, 40),
                    rng.randint(1, len(PRODUCTS)),
                    rng.randint(1, 4),
                    (start + timedelta(days=rng.randint(0, 330))).isoformat(),
                )
                for _ in range(600)
            ],
        )
    db.close()
    return path


if __name__ == "__main__":
    target = create(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
    print(f"created {target}")
