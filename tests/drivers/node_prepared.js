// node-postgres named prepared statements through pgtenant in transaction
// pooling, more clients than backend connections.
// argv: connectionString, clients, iterations. Exits 1 on any error or wrong row.
const { Client } = require("pg");

const [conn, clients, iterations] = [process.argv[2], +process.argv[3], +process.argv[4]];

async function worker(n) {
  const c = new Client({ connectionString: conn });
  await c.connect();
  try {
    for (let i = 0; i < iterations; i++) {
      const tenant = ["acme", "globex", "initech"][(n + i) % 3];
      const r = await c.query({
        name: "first-account",
        text: "SELECT name FROM accounts WHERE tenant_id = $1 ORDER BY id LIMIT 1",
        values: [tenant],
      });
      if (r.rows.length !== 1 || r.rows[0].name !== `${tenant}-1`) {
        throw new Error(`tenant ${tenant} got ${JSON.stringify(r.rows)}`);
      }
      await c.query({ name: "plus-one", text: "SELECT $1::int + 1 AS v", values: [i] });
    }
  } finally {
    await c.end();
  }
}

Promise.all([...Array(clients).keys()].map(worker))
  .then(() => console.log(`ok ${clients * iterations}`))
  .catch((e) => {
    console.error(e.message || e);
    process.exit(1);
  });
