//! The `ckpt` command-line tool. All logic lives in the library; this binary parses arguments,
//! renders reports and owns the exit code (0 ok, 1 findings, 2 error).

fn main() {
    println!("ckpt");
}
