fn main() {
    eprintln!("mock-kind-webhook: not implemented yet");
    std::process::exit(2);
}
