// A backend-for-frontend in plain node:http: GET /checkout-page?customer_id=…&tenant=…&market=…
// returns the page model the checkout front end renders, decided by the flagforge module —
// the same module bytes the Rust services run, so the BFF and the services cannot disagree.
//
// The module comes from a host daemon (FLAGFORGE_HOST + FLAGFORGE_RULESET; kept current by
// polling with ETags) or from a file (FLAGFORGE_MODULE). PORT defaults to 3000.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { FlagEngine, LiveFlags } from "flagforge";

async function engineSource() {
  if (process.env.FLAGFORGE_HOST) {
    const live = await LiveFlags.connect({
      baseUrl: process.env.FLAGFORGE_HOST,
      ruleset: process.env.FLAGFORGE_RULESET ?? "checkout",
      pollMs: Number(process.env.FLAGFORGE_POLL_MS ?? 5000),
      onUpdate: ({ version, hash }) => console.error(`module v${version} (${hash.slice(0, 12)}…)`),
      onError: (e) => console.error(`keeping the last good module: ${e.message ?? e}`),
    });
    return { evaluate: (...a) => live.evaluate(...a), info: () => ({ version: live.version, hash: live.hash }) };
  }
  const file = process.env.FLAGFORGE_MODULE ?? "checkout.wasm";
  const engine = await FlagEngine.load(await readFile(file));
  return { evaluate: (...a) => engine.evaluate(...a), info: () => ({ version: null, hash: engine.hash }) };
}

const flags = await engineSource();

/** The checkout page model for one visitor. */
function checkoutPage(query) {
  const context = {
    customer_id: query.get("customer_id") ?? undefined,
    tenant: query.get("tenant") ?? undefined,
    market: query.get("market") ?? undefined,
    tier: query.get("tier") ?? undefined,
    now: new Date().toISOString(),
  };
  const layout = flags.evaluate("CheckoutExperienceVariant", context);
  const perks = flags.evaluate("PremiumEntitlementRule", context);
  return {
    layout: layout.value,
    perks: perks.value,
    decisions: { CheckoutExperienceVariant: layout, PremiumEntitlementRule: perks },
    module: flags.info(),
  };
}

const server = createServer((req, res) => {
  const url = new URL(req.url, "http://bff");
  if (req.method === "GET" && url.pathname === "/checkout-page") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(checkoutPage(url.searchParams), (_, v) => (typeof v === "bigint" ? v.toString() : v)));
  } else if (url.pathname === "/healthz") {
    res.writeHead(200).end("ok\n");
  } else {
    res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
  }
});
server.listen(Number(process.env.PORT ?? 3000), "127.0.0.1", () => {
  console.error(`bff listening on http://127.0.0.1:${server.address().port}`);
});
