fn main() {
    eprintln!("hollow-node: not implemented yet");
    std::process::exit(2);
}
