//! `checkout-workflow [--brokers HOST:PORT] [--in-flight N] [--after N]`: runs the checkout
//! saga (librdkafka's in-process mock cluster by default) and prints the per-order table.

use anyhow::{bail, Result};
use flagforge_example_checkout_workflow::{run, table, Config};

fn main() -> Result<()> {
    let mut config = Config {
        brokers: None,
        in_flight: 4,
        after: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--brokers" => config.brokers = Some(value()?),
            "--in-flight" => config.in_flight = value()?.parse()?,
            "--after" => config.after = value()?.parse()?,
            _ => bail!("unknown argument {a}; usage: checkout-workflow [--brokers HOST:PORT] [--in-flight N] [--after N]"),
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(run(config))?;
    drop(runtime);
    println!(
        "checkout saga: FulfillmentRoutingMode v{} → v{} published while {} order(s) were in flight\n",
        report.versions.0,
        report.versions.1,
        report.rows.iter().filter(|r| r.in_flight).count()
    );
    print!("{}", table(&report));
    Ok(())
}
