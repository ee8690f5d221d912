//! OpenFeature provider overhead per evaluation against the bare host API, side by side in
//! one run: `wasm_host::LoadedModule::evaluate` (bare), `flagforge_embed::Flags::details`
//! (the façade: lookup, `now`, details), and the `open-feature` client through
//! `FlagforgeProvider` (context conversion, SDK hooks and merging, result mapping).
//! Interleaved rounds; the median ns per evaluation of each, and the ratio to bare.
//! `cargo bench -p flagforge-benches --bench provider`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed assumption aborts the run"
)]

use std::time::Instant;

use flagforge_embed::{context, FlagforgeProvider, Flags};
use open_feature::{EvaluationContext, OpenFeature};

const FLAG: &str = "CheckoutExperienceVariant";
const N: u32 = 20_000;
const ROUNDS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let seeded =
        flagforge_testkit::seeded_snapshot("checkout", flagforge_testkit::checkout_module(false));
    let flags = Flags::builder()
        .snapshot_dir(&seeded.snapshots)
        .trusted_key_file(&seeded.key_file)
        .ruleset("checkout")
        .start()
        .unwrap();
    let module = wasm_host::Host::new(wasm_host::Limits::default())
        .unwrap()
        .load(&flagforge_testkit::checkout_module(false))
        .unwrap();
    let ctx = context!({ "targetingKey": "c-1001" });
    let of_ctx = EvaluationContext::default().with_targeting_key("c-1001");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let mut api = OpenFeature::singleton_mut().await;
        api.set_provider(FlagforgeProvider::new(flags.clone()))
            .await;
        api.create_client()
    });
    // Same answer everywhere first.
    let bare = module.evaluate(FLAG, &ctx, false);
    assert_eq!(bare.variant.as_deref(), Some("one_page"));
    assert_eq!(flags.details(FLAG, &ctx).unwrap().resolution, bare);
    let sdk = rt
        .block_on(client.get_string_details(FLAG, Some(&of_ctx), None))
        .unwrap();
    assert_eq!(sdk.variant.as_deref(), Some("one_page"));

    let (mut b, mut f, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(module.evaluate(FLAG, &ctx, false));
        }
        b.push(t.elapsed().as_nanos() as f64 / f64::from(N));
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(flags.details(FLAG, &ctx).unwrap());
        }
        f.push(t.elapsed().as_nanos() as f64 / f64::from(N));
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..N {
                std::hint::black_box(
                    client
                        .get_string_details(FLAG, Some(&of_ctx), None)
                        .await
                        .unwrap(),
                );
            }
        });
        p.push(t.elapsed().as_nanos() as f64 / f64::from(N));
    }
    let (b, f, p) = (median(b), median(f), median(p));
    println!("rust: one flag ({FLAG}, targetingKey only), median of {ROUNDS} rounds x {N}");
    println!("  bare wasm-host LoadedModule::evaluate   {b:8.0} ns");
    println!(
        "  flagforge-embed Flags::details          {f:8.0} ns  ({:.2}x, +{:.0} ns)",
        f / b,
        f - b
    );
    println!(
        "  open-feature client + FlagforgeProvider {p:8.0} ns  ({:.2}x, +{:.0} ns)",
        p / b,
        p - b
    );
}
