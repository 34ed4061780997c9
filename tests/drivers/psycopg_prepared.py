"""psycopg 3 with server-side prepared statements (prepare_threshold=0) through
pgtenant in transaction pooling, more clients than backend connections.
argv: conninfo, clients, iterations. Exits non-zero on any error or wrong row."""
import sys
import threading

import psycopg

conninfo, clients, iterations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
errors = []


def worker(n):
    try:
        with psycopg.connect(conninfo, prepare_threshold=0, autocommit=True) as conn:
            for i in range(iterations):
                tenant = ("acme", "globex", "initech")[(n + i) % 3]
                row = conn.execute(
                    "SELECT name FROM accounts WHERE tenant_id = %s ORDER BY id LIMIT 1", (tenant,)
                ).fetchone()
                if row is None or row[0] != f"{tenant}-1":
                    errors.append(f"client {n}: tenant {tenant} got {row}")
                # A transaction with two prepared statements.
                with conn.transaction():
                    conn.execute("SELECT count(*) FROM accounts WHERE tenant_id = %s", (tenant,))
                    conn.execute("SELECT %s::int + 1", (i,))
    except Exception as e:  # noqa: BLE001 - report every failure
        errors.append(f"client {n}: {type(e).__name__}: {e}")


threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("\n".join(errors[:20]))
    sys.exit(1)
print(f"ok {clients * iterations}")
