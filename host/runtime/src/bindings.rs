//! Every world's bindings, generated in one place: the three `bindgen!` invocations share
//! one `logging` interface (the converter's) and the imports are all trappable, so a
//! host import can stop a guest. Each world's module (`converter.rs`, `notifier.rs`,
//! `auth.rs`) glob-imports its bindings from here and implements the host side.

/// The `converter` world.
pub mod converter {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "converter",
        imports: { default: trappable },
        with: {
            "tapedeck:plugin/io.source": crate::converter::InputSource,
            "tapedeck:plugin/io.sink": crate::converter::OutputSink,
        },
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    });
}

/// The `notifier` world.
pub mod notifier {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "notifier",
        imports: { default: trappable },
        // One `logging` interface for every world: the converter's bindings (its `Level`).
        with: { "tapedeck:plugin/logging": super::converter::tapedeck::plugin::logging },
    });
}

/// The `auth` world.
pub mod auth {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "auth",
        imports: { default: trappable },
    });
}
