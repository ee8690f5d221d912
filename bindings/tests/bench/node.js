// Node side of the host benchmark: prints {measure: ns/op} as JSON. Arg: the data directory
// written by benches/benches/hosts.rs (checkout.wasm, bench.json).
import { readFileSync } from "node:fs";
import path from "node:path";
import { root } from "../common.js";
import { measureAll } from "./measure.js";

const dir = process.argv[2];
const { FlagEngine } = await import(path.join(root, "bindings/pkg/index.js"));
const data = JSON.parse(readFileSync(path.join(dir, "bench.json"), "utf8"));
const now = () => performance.now();
console.log(JSON.stringify(await measureAll(FlagEngine, readFileSync(path.join(dir, "checkout.wasm")), data, now)));
