//! The wit-bindgen bindings of the `domain-component` world, generated once
//! for both directions: the exports the component implements and the
//! imports it calls.

wit_bindgen::generate!({
    path: "wit",
    world: "domain-component",
    pub_export_macro: true,
    export_macro_name: "__export_domain_component",
    default_bindings_module: "cqrs_wasi::__private::bindings",
    runtime_path: "wit_bindgen::rt",
});
