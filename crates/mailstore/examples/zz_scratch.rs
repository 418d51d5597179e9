fn main() {
    println!(
        "MessageInfo {} FlagSet {} BTreeSet {} OnceLock<Box<[u8]>> {}",
        std::mem::size_of::<petrel_mailstore::MessageInfo>(),
        std::mem::size_of::<petrel_mailstore::FlagSet>(),
        std::mem::size_of::<std::collections::BTreeSet<String>>(),
        std::mem::size_of::<std::sync::OnceLock<Box<[u8]>>>()
    );
}
