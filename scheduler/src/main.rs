fn main() {
    eprintln!("mock-kind-scheduler: not implemented yet");
    std::process::exit(2);
}
