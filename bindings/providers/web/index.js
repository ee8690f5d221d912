// An OpenFeature web provider (static context: the context changes rarely, every flag is
// evaluated when it does) on the flagforge npm package. The module is evaluated in the page,
// kept current from a flagforge host by server-sent events (LiveFlags); a new version
// re-evaluates every flag and announces the ones whose answers changed.
import { OpenFeatureEventEmitter, ProviderEvents } from "@openfeature/web-sdk";
import { FlagEngine, LiveFlags } from "flagforge";
import { flagTypes, notReady, startModule, toContext, toResolution } from "flagforge/openfeature";

export class FlagforgeWebProvider {
  metadata = { name: "flagforge" };
  runsOn = "client";
  events = new OpenFeatureEventEmitter();
  hooks = [];
  #options;
  #live = null;
  #engine = null;
  #version = null;
  #types = new Map();
  #context = {};
  #answers = new Map();

  /**
   * @param options `{ baseUrl, ruleset, bootstrap? }` to follow a flagforge host (pages on
   *   another origin need `flagforge host --cors-origin`), or `{ engine }` / `{ module }`.
   */
  constructor(options) {
    this.#options = options;
  }

  async initialize(context) {
    this.#context = toContext(context);
    this.#live = await startModule({ FlagEngine, LiveFlags }, this.#options,
      (u) => this.#updated(u), (e) => this.#failed(e));
  }

  async onContextChange(_old, next) {
    this.#context = toContext(next);
    this.#evaluateAll();
  }

  async onClose() {
    this.#live?.close();
  }

  /** Evaluates every flag for the current context; returns the keys whose answers changed. */
  #evaluateAll() {
    const before = this.#answers;
    this.#answers = new Map();
    const changed = [];
    for (const r of this.#engine.evaluateAll(this.#context)) {
      this.#answers.set(r.key, r);
      if (JSON.stringify(before.get(r.key)) !== JSON.stringify(r)) changed.push(r.key);
    }
    for (const key of before.keys()) if (!this.#answers.has(key)) changed.push(key);
    return changed;
  }

  #serve(engine, version) {
    this.#engine = engine;
    this.#version = version;
    this.#types = flagTypes(engine.manifest);
    return this.#evaluateAll();
  }

  #updated({ engine, version }) {
    const first = !this.#engine;
    const changed = this.#serve(engine, version);
    if (first) return;
    this.events.emit(ProviderEvents.ConfigurationChanged, {
      flagsChanged: changed,
      metadata: { sha256: this.#engine.hash, version: version ?? 0 },
    });
  }

  #failed(error) {
    if (this.#engine) {
      this.events.emit(ProviderEvents.Stale, { message: `flagforge: ${error?.message ?? error}` });
    }
  }

  #resolve(flagKey, expected, defaultValue) {
    const engine = this.#engine;
    if (!engine) return notReady(defaultValue);
    const result = this.#answers.get(flagKey) ?? engine.evaluate(flagKey, this.#context);
    const metadata = { ruleset: engine.ruleset, sha256: engine.hash };
    if (this.#version !== null) metadata.version = this.#version;
    return toResolution(result, expected, this.#types, defaultValue, metadata);
  }

  resolveBooleanEvaluation(flagKey, defaultValue) {
    return this.#resolve(flagKey, "boolean", defaultValue);
  }
  resolveStringEvaluation(flagKey, defaultValue) {
    return this.#resolve(flagKey, "string", defaultValue);
  }
  resolveNumberEvaluation(flagKey, defaultValue) {
    return this.#resolve(flagKey, "number", defaultValue);
  }
  resolveObjectEvaluation(flagKey, defaultValue) {
    return this.#resolve(flagKey, "object", defaultValue);
  }
}
