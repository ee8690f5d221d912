import type { Provider, JsonValue, EvaluationContext, ResolutionDetails, OpenFeatureEventEmitter } from "@openfeature/server-sdk";
import type { FlagEngine } from "flagforge";

export type FlagforgeProviderOptions =
  | { engine: FlagEngine }
  | { module: Uint8Array | ArrayBuffer }
  | {
      /** A flagforge host, e.g. `http://127.0.0.1:8080`. */
      baseUrl: string;
      ruleset: string;
      /** Module bytes served before the first download. */
      bootstrap?: Uint8Array | ArrayBuffer;
      /** Refresh period where EventSource is unavailable (Node 20); default 30 s. */
      pollMs?: number;
    };

/** OpenFeature server provider evaluating flagforge modules in-process. */
export declare class FlagforgeProvider implements Provider {
  constructor(options: FlagforgeProviderOptions);
  readonly metadata: { name: "flagforge" };
  readonly runsOn: "server";
  readonly events: OpenFeatureEventEmitter;
  readonly hooks: [];
  initialize(): Promise<void>;
  onClose(): Promise<void>;
  resolveBooleanEvaluation(flagKey: string, defaultValue: boolean, context: EvaluationContext): Promise<ResolutionDetails<boolean>>;
  resolveStringEvaluation(flagKey: string, defaultValue: string, context: EvaluationContext): Promise<ResolutionDetails<string>>;
  resolveNumberEvaluation(flagKey: string, defaultValue: number, context: EvaluationContext): Promise<ResolutionDetails<number>>;
  resolveObjectEvaluation<T extends JsonValue>(flagKey: string, defaultValue: T, context: EvaluationContext): Promise<ResolutionDetails<T>>;
}
