// An OpenFeature server provider (dynamic context: a context per evaluation) on the flagforge
// npm package: the module is evaluated in-process, kept current from a flagforge host
// (LiveFlags: ETag download, server-sent events or polling) or given as an engine.
import { OpenFeatureEventEmitter, ProviderEvents } from "@openfeature/server-sdk";
import { FlagEngine, LiveFlags } from "flagforge";
import { flagTypes, notReady, startModule, toContext, toResolution } from "flagforge/openfeature";

export class FlagforgeProvider {
  metadata = { name: "flagforge" };
  runsOn = "server";
  events = new OpenFeatureEventEmitter();
  hooks = [];
  #options;
  #live = null;
  #engine = null;
  #version = null;
  #types = new Map();
  #stale = false;

  /**
   * @param options `{ engine }` (a loaded FlagEngine, or `module` bytes) to serve one module,
   *   or `{ baseUrl, ruleset, bootstrap?, pollMs? }` to follow a flagforge host.
   */
  constructor(options) {
    this.#options = options;
  }

  async initialize() {
    this.#live = await startModule({ FlagEngine, LiveFlags }, this.#options,
      (u) => this.#updated(u), (e) => this.#failed(e));
  }

  async onClose() {
    this.#live?.close();
  }

  #serve(engine, version) {
    this.#engine = engine;
    this.#version = version;
    this.#types = flagTypes(engine.manifest);
  }

  #updated({ engine, version, previousHash, flagsChanged }) {
    const before = this.#engine;
    this.#serve(engine, version);
    if (!before) return; // the first module: initialize() reports READY
    if (this.#stale) {
      this.#stale = false;
      this.events.emit(ProviderEvents.Ready, { message: "flagforge: host reachable again" });
    }
    this.events.emit(ProviderEvents.ConfigurationChanged, {
      // The host's semantic diff when this client was one version behind; else every flag.
      flagsChanged: flagsChanged ?? engine.manifest.flags.map((f) => f.key),
      metadata: { sha256: engine.hash, previous: previousHash ?? "", version: version ?? 0 },
    });
  }

  #failed(error) {
    // The last good module keeps serving; the SDK reports the provider STALE.
    if (this.#engine && !this.#stale) {
      this.#stale = true;
      this.events.emit(ProviderEvents.Stale, { message: `flagforge: ${error?.message ?? error}` });
    }
  }

  #resolve(flagKey, expected, defaultValue, context) {
    const engine = this.#engine;
    if (!engine) return notReady(defaultValue);
    const result = engine.evaluate(flagKey, toContext(context));
    const metadata = { ruleset: engine.ruleset, sha256: engine.hash };
    if (this.#version !== null) metadata.version = this.#version;
    return toResolution(result, expected, this.#types, defaultValue, metadata);
  }

  resolveBooleanEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(this.#resolve(flagKey, "boolean", defaultValue, context));
  }
  resolveStringEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(this.#resolve(flagKey, "string", defaultValue, context));
  }
  resolveNumberEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(this.#resolve(flagKey, "number", defaultValue, context));
  }
  resolveObjectEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(this.#resolve(flagKey, "object", defaultValue, context));
  }
}
