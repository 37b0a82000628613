//! `centaurusctl`: the client CLI. So far it lists the kinds a region serves; the verbs that
//! talk to the API server (`get`, `apply`, `delete`, `watch`, `tenant`) come with it.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "centaurusctl", version, about = "Talk to a Centaurus region")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the built-in kinds: name, short names, API version, scope.
    ApiResources,
}

fn main() {
    match Cli::parse().command {
        Command::ApiResources => {
            println!(
                "{:<14} {:<10} {:<30} {:<11} KIND",
                "NAME", "SHORT", "APIVERSION", "SCOPE"
            );
            for info in centaurus_core::model::Registry::builtin().kinds() {
                println!(
                    "{:<14} {:<10} {:<30} {:<11} {}",
                    info.plural,
                    info.short_names.join(","),
                    info.api_version(),
                    format!("{:?}", info.scope),
                    info.kind
                );
            }
        }
    }
}
