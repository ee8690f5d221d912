//! Hand-written guests (WAT) that implement the ABI but misbehave on purpose, plus helpers.

use flagforge_protocol::{
    encode, manifest::ManifestReply, FlagInfo, FlagKind, Lifecycle, Manifest, Reason, Resolution,
    Value, VariantInfo,
};

/// Flag keys of the misbehaving guest; its behaviour is chosen by the flag's number.
pub const LOOP: &str = "loop"; // 0: loops forever
pub const GROW: &str = "grow!"; // 1: grows memory without bound
pub const TRAP: &str = "unrch!"; // 2: executes `unreachable`
pub const BAD_PTR: &str = "badptr!"; // 3: returns a buffer outside memory
pub const BAD_RECORD: &str = "badrec!"; // 5: answers a record naming variant 9 (there are 2)
pub const OK: &str = "ok"; // anything else: a canned, valid result

fn flag(key: &str) -> FlagInfo {
    FlagInfo {
        key: key.into(),
        kind: FlagKind::Ops,
        owner: "tests".into(),
        description: None,
        expires: None,
        variants: vec![
            VariantInfo {
                name: "normal".into(),
                value: Value::from("normal"),
            },
            VariantInfo {
                name: "safe".into(),
                value: Value::from("fallback"),
            },
        ],
        default: "normal".into(),
        on_error: "safe".into(),
        states: vec![],
        prerequisites: vec![],
        // Every flag reads `x`, so hosts call the module for each (nothing is remembered).
        reads: vec!["x".into()],
        is_static: false,
        propagation: flagforge_protocol::Propagation::Immediate,
        expose: Vec::new(),
        lifecycle: Lifecycle::default(),
        metadata: Default::default(),
        float: false,
    }
}

pub fn manifest(abi_version: u32) -> Manifest {
    Manifest {
        abi_version,
        ruleset: "hostile".into(),
        compiler: "hand-written".into(),
        context: vec![flagforge_protocol::AttrDecl {
            name: "x".into(),
            ty: "string".into(),
        }],
        flags: [LOOP, GROW, TRAP, BAD_PTR, OK, BAD_RECORD]
            .into_iter()
            .map(flag)
            .collect(),
        targeting_key: flagforge_protocol::TARGETING_KEY.into(),
    }
}

pub fn canned() -> Resolution {
    Resolution {
        key: OK.into(),
        value: Value::from("normal"),
        variant: Some("normal".into()),
        reason: Reason::Static,
        error_code: None,
        error_message: None,
        explain: None,
        metadata: Vec::new(),
    }
}

fn wat_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

/// Options for building a guest.
#[derive(Default)]
pub struct Guest<'a> {
    pub abi_version: u32,
    pub extra: &'a str,
    pub omit_manifest: bool,
    pub input_signature: Option<&'a str>,
}

pub fn build(g: Guest) -> Vec<u8> {
    let manifest = encode(&ManifestReply::Ok(manifest(
        flagforge_protocol::abi::ABI_VERSION,
    )))
    .unwrap();
    // A `STATIC` answer serving variant `variant`.
    let record = |variant| {
        let mut out = Vec::new();
        flagforge_protocol::abi::Record {
            reason: Reason::Static,
            error: None,
            variant: Some(variant),
            message: "",
            explain: &[],
        }
        .write(&mut out);
        out
    };
    let (result, bad_record) = (record(0), record(9));
    let abi = if g.abi_version == 0 {
        flagforge_protocol::abi::ABI_VERSION
    } else {
        g.abi_version
    };
    let input_sig = g.input_signature.unwrap_or("(param i32) (result i32)");
    let manifest_fn = if g.omit_manifest {
        String::new()
    } else {
        format!(
            r#"(func (export "ff_manifest") (result i64)
                 (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {})))"#,
            manifest.len()
        )
    };
    let wat = format!(
        r#"(module
  {extra}
  (memory (export "memory") 2)
  (data (i32.const 1024) "{m}")
  (data (i32.const 8192) "{r}")
  (data (i32.const 8448) "{b}")
  (func (export "ff_abi_version") (result i32) (i32.const {abi}))
  (func (export "ff_input") {input_sig}
    (i32.const 16384))
  {manifest_fn}
  (func (export "ff_evaluate") (param $flag i32) (param i32 i32) (result i64)
    (if (i32.eq (local.get $flag) (i32.const 0)) (then (loop $l (br $l))))
    (if (i32.eq (local.get $flag) (i32.const 1))
      (then (loop $g (drop (memory.grow (i32.const 16))) (br $g))))
    (if (i32.eq (local.get $flag) (i32.const 2)) (then unreachable))
    (if (i32.eq (local.get $flag) (i32.const 3)) (then (return (i64.const 0x7ff0000000000010))))
    (if (i32.eq (local.get $flag) (i32.const 5))
      (then (return (i64.or (i64.shl (i64.const 8448) (i64.const 32)) (i64.const {bl})))))
    (i64.or (i64.shl (i64.const 8192) (i64.const 32)) (i64.const {rl})))
  (func (export "ff_evaluate_all") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 8192) (i64.const 32)) (i64.const {rl})))
)"#,
        extra = g.extra,
        m = wat_bytes(&manifest),
        r = wat_bytes(&result),
        rl = result.len(),
        b = wat_bytes(&bad_record),
        bl = bad_record.len(),
    );
    wat::parse_str(&wat).unwrap()
}

/// The real checkout example module.
pub fn checkout() -> Vec<u8> {
    flagforge_compiler::compile_path(&rules_examples::dir("checkout"))
        .unwrap()
        .module
}
