// LiveFlags: keeps a FlagEngine current from a flagforge host daemon. Fetches
// GET {base}/v1/modules/{ruleset} (ETag = module sha256, 304 when unchanged), listens to
// GET {base}/v1/modules/{ruleset}/events (server-sent events, one per new version) where
// EventSource exists and polls otherwise, loads a new module completely before swapping it in
// (an evaluation uses one module from start to end), and keeps the last good module when the
// network or a download fails. Bootstrap bytes give a first answer before any request.

/** loadFromUrl for an entry point's FlagEngine (a host daemon's /v1/modules/{ruleset}). */
export function makeLoadFromUrl(FlagEngine) {
  return async function loadFromUrl(url, init) {
    const res = await fetch(url, init);
    if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
    return FlagEngine.load(new Uint8Array(await res.arrayBuffer()));
  };
}

export function makeLive(FlagEngine) {
  return class LiveFlags {
    #engine = null;
    #version = null;
    #base;
    #ruleset;
    #events = null;
    #timer = null;
    #closed = false;
    #onUpdate;
    #onError;

    constructor({ baseUrl, ruleset, onUpdate, onError }) {
      this.#base = baseUrl.replace(/\/$/, "");
      this.#ruleset = ruleset;
      this.#onUpdate = onUpdate ?? (() => {});
      this.#onError = onError ?? (() => {});
    }

    /**
     * Starts a live engine. `bootstrap` (module bytes) serves before the first download;
     * `pollMs` is the fallback refresh period where EventSource is unavailable (Node).
     */
    static async connect({ baseUrl, ruleset, bootstrap, pollMs = 30000, onUpdate, onError }) {
      const live = new LiveFlags({ baseUrl, ruleset, onUpdate, onError });
      if (bootstrap) {
        await live.#swap(await FlagEngine.load(new Uint8Array(bootstrap)), null);
      }
      await live.refresh();
      live.#listen(pollMs);
      return live;
    }

    /** The module being served (null until one is loaded). */
    get engine() { return this.#engine; }
    /** The version announced by the host for the served module, when known. */
    get version() { return this.#version; }
    /** sha256 of the served module. */
    get hash() { return this.#engine?.hash ?? null; }

    evaluate(flagKey, context, explain) {
      const engine = this.#engine;
      if (!engine) {
        return { key: flagKey, value: null, reason: "ERROR", errorCode: "PROVIDER_NOT_READY",
                 errorMessage: "no module loaded yet" };
      }
      return engine.evaluate(flagKey, context, explain);
    }

    evaluateAll(context, explain) {
      return this.#engine ? this.#engine.evaluateAll(context, explain) : [];
    }

    /** Fetches the module if it changed; keeps the current one on any failure. */
    async refresh() {
      const url = `${this.#base}/v1/modules/${encodeURIComponent(this.#ruleset)}`;
      try {
        const headers = this.hash ? { "if-none-match": `"${this.hash}"` } : {};
        const res = await fetch(url, { headers, cache: "no-store" });
        if (res.status === 304) return false;
        if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
        const bytes = new Uint8Array(await res.arrayBuffer());
        const engine = await FlagEngine.load(bytes);
        const etag = (res.headers.get("etag") ?? "").replaceAll('"', "");
        if (etag && etag !== engine.hash) {
          throw new Error(`module hash ${engine.hash} does not match the ETag ${etag}`);
        }
        const version = Number(res.headers.get("x-flagforge-version")) || null;
        // The host names the flags whose answers can have changed when this client was one
        // version behind; otherwise every flag may have.
        const changed = res.headers.get("x-flagforge-flags-changed");
        const flagsChanged = changed === null ? null : changed.split(",").filter(Boolean);
        await this.#swap(engine, version, flagsChanged);
        return true;
      } catch (e) {
        this.#onError(e);
        return false;
      }
    }

    async #swap(engine, version, flagsChanged = null) {
      if (this.#closed) return;
      if (engine.ruleset !== this.#ruleset) {
        throw new Error(`module holds ruleset ${engine.ruleset}, not ${this.#ruleset}`);
      }
      const previous = this.#engine;
      this.#engine = engine;
      this.#version = version;
      this.#onUpdate({
        engine,
        version,
        hash: engine.hash,
        previousHash: previous?.hash ?? null,
        // null: unknown (first module, or more than one version behind): any flag may differ.
        flagsChanged: previous ? flagsChanged : null,
      });
    }

    #listen(pollMs) {
      if (typeof globalThis.EventSource === "function") {
        const url = `${this.#base}/v1/modules/${encodeURIComponent(this.#ruleset)}/events`;
        this.#events = new EventSource(url);
        this.#events.addEventListener("module", (ev) => {
          try {
            const { sha256 } = JSON.parse(ev.data);
            if (sha256 !== this.hash) this.refresh();
          } catch (e) {
            this.#onError(e);
          }
        });
        // EventSource reconnects by itself; a reconnect may have missed an event.
        this.#events.addEventListener("open", () => this.refresh());
      } else {
        const tick = async () => {
          await this.refresh();
          if (!this.#closed) this.#timer = setTimeout(tick, pollMs);
        };
        this.#timer = setTimeout(tick, pollMs);
      }
    }

    /** Stops listening; the current engine keeps answering. */
    close() {
      this.#closed = true;
      this.#events?.close();
      if (this.#timer) clearTimeout(this.#timer);
    }
  };
}
