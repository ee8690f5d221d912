import type { Provider, JsonValue, EvaluationContext, ResolutionDetails, OpenFeatureEventEmitter } from "@openfeature/web-sdk";
import type { FlagEngine } from "flagforge";

export type FlagforgeWebProviderOptions =
  | { engine: FlagEngine }
  | { module: Uint8Array | ArrayBuffer }
  | {
      /** A flagforge host, e.g. `https://flags.example`; another origin needs its --cors-origin. */
      baseUrl: string;
      /** Usually an audience build, e.g. `checkout.browser`. */
      ruleset: string;
      /** Module bytes served before the first download (first paint). */
      bootstrap?: Uint8Array | ArrayBuffer;
    };

/** OpenFeature web provider evaluating flagforge modules in the page (static context). */
export declare class FlagforgeWebProvider implements Provider {
  constructor(options: FlagforgeWebProviderOptions);
  readonly metadata: { name: "flagforge" };
  readonly runsOn: "client";
  readonly events: OpenFeatureEventEmitter;
  readonly hooks: [];
  initialize(context?: EvaluationContext): Promise<void>;
  onContextChange(oldContext: EvaluationContext, newContext: EvaluationContext): Promise<void>;
  onClose(): Promise<void>;
  resolveBooleanEvaluation(flagKey: string, defaultValue: boolean): ResolutionDetails<boolean>;
  resolveStringEvaluation(flagKey: string, defaultValue: string): ResolutionDetails<string>;
  resolveNumberEvaluation(flagKey: string, defaultValue: number): ResolutionDetails<number>;
  resolveObjectEvaluation<T extends JsonValue>(flagKey: string, defaultValue: T): ResolutionDetails<T>;
}
