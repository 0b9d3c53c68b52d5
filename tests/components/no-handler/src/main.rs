//! A component the host must refuse: it exports `wasi:cli/run`, nothing else.

fn main() {
    println!("I am not a handler");
}
