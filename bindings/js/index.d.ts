// Types of the "flagforge" entry point (the JavaScript runtime, bindings/js/engine.js).

/** A flag's answer; the shape of OpenFeature's resolution details. */
export interface FlagResult {
  key: string;
  value: unknown;
  variant?: string;
  reason: "STATIC" | "DEFAULT" | "TARGETING_MATCH" | "SPLIT" | "DISABLED" | "CACHED" | "STALE" | "ERROR";
  errorCode?: "PROVIDER_NOT_READY" | "FLAG_NOT_FOUND" | "PARSE_ERROR" | "TYPE_MISMATCH" | "TARGETING_KEY_MISSING"
    | "INVALID_CONTEXT" | "PROVIDER_FATAL" | "GENERAL";
  errorMessage?: string;
  explain?: { rule?: number; steps: { check: string; source?: string; outcome: string }[] };
  /** The flag's static metadata (`metadata:` in its rule file), on every answer for it. */
  metadata?: Record<string, string | number | boolean>;
}

/** An evaluation context: attribute name to JSON-like value (BigInt allowed for integers). */
export type EvaluationContext = Record<string, unknown>;

/** What a module reports about itself (ABI.md, "Manifest"). */
export interface Manifest {
  abi_version: number;
  ruleset: string;
  compiler: string;
  targeting_key: string;
  context: { name: string; type: string }[];
  flags: {
    key: string;
    kind: "release" | "experiment" | "ops" | "migration" | "policy";
    owner: string;
    description?: string;
    expires?: string;
    variants: { name: string; value: unknown }[];
    default: string;
    on_error: string;
    states?: string[];
    prerequisites?: string[];
    reads?: string[];
    static: boolean;
    propagation: "immediate" | "near-real-time" | "eventual";
    expose?: string[];
    lifecycle: { retirement: string | null; dependents: string[]; docs: string | null };
    float: boolean;
  }[];
}

/** A loaded flagforge module, ready to evaluate. */
export declare class FlagEngine {
  private constructor();
  /** Validates, compiles and instantiates module bytes. Rejects with an Error whose `code` is
   * one of `too_large`, `bad_magic`, `invalid_module`, `imports`, `missing_export`,
   * `abi_version`, `instantiate`, `unusable`, `no_rules`, `bad_manifest`. */
  static load(bytes: Uint8Array | ArrayBuffer | ArrayBufferView): Promise<FlagEngine>;
  /** The canonical MessagePack bytes of a context (throws a TypeError for an unusable one). */
  static encodeContext(context?: EvaluationContext | null): Uint8Array;
  readonly manifest: Manifest;
  /** sha256 of the module bytes (hex). */
  readonly hash: string;
  readonly ruleset: string;
  /** Module size in bytes. */
  readonly size: number;
  /** One flag. Never throws: problems become a result with reason `ERROR`. */
  evaluate(flagKey: string, context?: EvaluationContext | null, explain?: boolean): FlagResult;
  /** Every flag, in declaration order, in one call. */
  evaluateAll(context?: EvaluationContext | null, explain?: boolean): FlagResult[];
  /** The result's MessagePack bytes for canonical context bytes (the corpora's contract). */
  evaluateBytes(flagKey: string, context: Uint8Array, explain?: boolean): Uint8Array;
  /** Every flag's result bytes, a MessagePack list in declaration order. */
  evaluateAllBytes(context: Uint8Array, explain?: boolean): Uint8Array;
}

/** Loads a module from a URL, e.g. a host daemon's `/v1/modules/{ruleset}`. */
export declare function loadFromUrl(url: string, init?: RequestInit): Promise<FlagEngine>;

export interface LiveUpdate {
  /** The module now served. */
  engine: FlagEngine;
  version: number | null;
  hash: string;
  previousHash: string | null;
  /** Flags whose answers can differ from the previous module (the host's semantic diff);
   * null when unknown (first module, or more than one version behind). */
  flagsChanged: string[] | null;
}

export interface LiveOptions {
  /** The host daemon, e.g. `http://localhost:8080`. */
  baseUrl: string;
  ruleset: string;
  /** Module bytes to serve before the first download (first paint). */
  bootstrap?: Uint8Array | ArrayBuffer;
  /** Refresh period where EventSource is unavailable (Node); default 30 s. */
  pollMs?: number;
  onUpdate?: (update: LiveUpdate) => void;
  /** Network or module failures; the last good module keeps serving. */
  onError?: (error: unknown) => void;
}

/** A FlagEngine kept current from a host daemon (ETag download + server-sent events). */
export declare class LiveFlags {
  static connect(options: LiveOptions): Promise<LiveFlags>;
  readonly engine: FlagEngine | null;
  readonly version: number | null;
  readonly hash: string | null;
  evaluate(flagKey: string, context?: EvaluationContext | null, explain?: boolean): FlagResult;
  evaluateAll(context?: EvaluationContext | null, explain?: boolean): FlagResult[];
  /** Fetches the module if it changed; resolves to whether a new one is now served. */
  refresh(): Promise<boolean>;
  close(): void;
}
