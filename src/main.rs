//! The `ckpt` command-line tool. All logic lives in the library; this binary parses arguments,
//! renders reports and owns the exit code: 0 ok, 1 findings (differs, incompatible, not
//! equivalent), 2 error (bad input, usage).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
