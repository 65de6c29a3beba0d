//! Command-line flags of the targets: `--name value`, nothing more.

use std::fmt::Display;
use std::str::FromStr;

/// The value of `--name value` on the command line, or `default`.
///
/// Exits with status 2 and a message when the value does not parse, so a
/// typo in a test shows at once.
pub fn flag<T>(name: &str, default: T) -> T
where
    T: FromStr,
    T::Err: Display,
{
    let wanted = format!("--{name}");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg != wanted {
            continue;
        }
        let Some(value) = args.next() else {
            eprintln!("flag '{wanted}' needs a value");
            std::process::exit(2);
        };
        return match value.parse() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("bad value '{value}' for '{wanted}': {e}");
                std::process::exit(2);
            }
        };
    }
    default
}
