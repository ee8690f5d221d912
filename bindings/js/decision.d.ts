// Types of "flagforge/decision": decision contexts (docs/decision-context.md).
import type { FlagEngine } from "./index.js";

export interface DecideOptions {
  /** The flags decided (each must be in the engine's ruleset). */
  flags: string[];
  context?: Record<string, unknown> | null;
  correlationId: string;
  /** Text of a secret key file from `flagforge keygen`; keep it on servers. */
  secretKey: string;
  ttlMs: number;
  /** The ruleset version the engine serves, when known. */
  version?: number;
  nowMs?: number;
}

/** Decides once and returns the signed `flagforge-decision` header value. Throws an Error with
 * `code` `bad_key` or `unknown_flag`. */
export declare function decide(engine: FlagEngine, options: DecideOptions): string;

/** Verifies a header value against trusted public key texts. Never throws. */
export declare function verifyDecision(header: string, publicKeys: string[], nowMs?: number):
  | { ok: true; context: Record<string, unknown> }
  | { ok: false; kind: "malformed" | "unsupported_format" | "unknown_key" | "bad_signature" | "expired" | "bad_key"; error: string };
