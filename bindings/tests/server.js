// A static file server over the repository for the browser tests (and modules from
// FLAGFORGE_MODULES under /modules/), on a free loopback port.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { root, modulesDir } from "./common.js";

const types = {
  ".html": "text/html", ".js": "text/javascript", ".json": "application/json",
  ".wasm": "application/wasm", ".css": "text/css",
};

export async function serveRepo() {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const file = url.pathname.startsWith("/modules/")
      ? path.join(modulesDir, path.basename(url.pathname))
      : path.join(root, path.normalize(url.pathname));
    if (!file.startsWith(root) && !file.startsWith(modulesDir)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { server, base: `http://127.0.0.1:${server.address().port}` };
}
