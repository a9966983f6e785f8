//! Shapes of real service types: aliases, nested and recursive types, and the differences
//! named between versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Order {
        pub(super) id: u64,
        pub(super) items: Vec<Item>,
        pub(super) status: Status,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Item {
        pub(super) sku: String,
        pub(super) quantity: u32,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) enum Status {
        Open,
        Shipped { tracking: String },
        Cancelled(Reason),
    }

    #[derive(Serialize, Deserialize)]
    pub(super) enum Reason {
        Customer,
        Stock,
    }
}

mod v2 {
    use super::*;

    /// A field more.
    #[derive(Serialize, Deserialize)]
    pub(super) struct Order {
        pub(super) id: u64,
        pub(super) items: Vec<super::v1::Item>,
        pub(super) status: super::v1::Status,
        #[serde(default)]
        pub(super) note: Option<String>,
    }
}

mod retyped {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Order {
        pub(super) id: u64,
        pub(super) items: Vec<Item>,
        pub(super) status: super::v1::Status,
    }

    /// `quantity` became a `u64`, deep inside.
    #[derive(Serialize, Deserialize)]
    pub(super) struct Item {
        pub(super) sku: String,
        pub(super) quantity: u64,
    }
}

mod fewer_variants {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Order {
        pub(super) id: u64,
        pub(super) items: Vec<super::v1::Item>,
        pub(super) status: Status,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) enum Status {
        Open,
        Shipped { tracking: String },
    }
}

type OrderId = u64;

fn shape<A: DeserializeOwned, R: DeserializeOwned>() -> MethodShape {
    MethodShape::of::<A, R, (), ()>().expect("traceable")
}

#[test]
fn the_same_types_spelled_another_way_have_the_same_shape() {
    let plain = shape::<(u64, v1::Order), Result<u64, String>>();
    let aliased = shape::<(OrderId, self::v1::Order), Result<OrderId, String>>();
    assert_eq!(plain, aliased);
    assert_eq!(plain.fingerprint("place"), aliased.fingerprint("place"));
    assert_ne!(plain.fingerprint("place"), plain.fingerprint("other"));
}

#[test]
fn nested_enums_are_explored_to_their_last_variant() {
    let shape = shape::<(v1::Order,), ()>();
    let Some(ContainerFormat::Enum(reasons)) = shape.containers.get("Reason") else {
        panic!("{shape:?}");
    };
    let names: Vec<&str> = reasons.values().map(|named| named.name.as_str()).collect();
    assert_eq!(names, ["Customer", "Stock"]);
}

#[test]
fn an_added_field_is_named_with_both_counts() {
    let here = shape::<(v1::Order,), u64>();
    let server = shape::<(v2::Order,), u64>();
    assert_ne!(here.fingerprint("place"), server.fingerprint("place"));
    assert_eq!(
        here.difference(&server, &["order"]).as_deref(),
        Some("argument `order`: struct `Order` has 4 fields on the server, 3 here")
    );
}

#[test]
fn a_retyped_field_deep_inside_is_named_with_its_path() {
    let here = shape::<(v1::Order,), u64>();
    let server = shape::<(retyped::Order,), u64>();
    assert_eq!(
        here.difference(&server, &["order"]).as_deref(),
        Some(
            "argument `order`: struct `Order`, field `items`: struct `Item`, field \
             `quantity`: `u64` on the server, `u32` here"
        )
    );
}

#[test]
fn a_removed_variant_is_named() {
    let here = shape::<(u64,), v1::Order>();
    let server = shape::<(u64,), fewer_variants::Order>();
    assert_eq!(
        here.difference(&server, &["id"]).as_deref(),
        Some(
            "result: struct `Order`, field `status`: enum `Status` has 2 variants on the \
             server, 3 here"
        )
    );
}

#[test]
fn a_shape_survives_the_trip_to_the_peer() {
    let shape = shape::<(BTreeMap<String, Vec<v1::Item>>, [u8; 4]), Option<v1::Order>>();
    assert_eq!(MethodShape::from_bytes(&shape.to_bytes()), Some(shape));
    assert_eq!(MethodShape::from_bytes(b"not a shape"), None);
}

#[test]
fn recursive_types_have_a_shape() {
    #[derive(Serialize, Deserialize)]
    enum Tree {
        Leaf(u32),
        Node(Box<Tree>, Box<Tree>),
    }
    #[derive(Serialize, Deserialize)]
    struct Dir {
        name: String,
        children: Vec<Dir>,
    }
    let shape = shape::<(Tree, Dir), Option<Box<Tree>>>();
    assert!(shape.containers.contains_key("Tree") && shape.containers.contains_key("Dir"));
}

#[test]
fn a_type_that_refuses_the_tracer_has_no_shape() {
    #[derive(Serialize)]
    struct Picky(u32);
    impl<'de> Deserialize<'de> for Picky {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            match u32::deserialize(deserializer)? {
                0 => Err(serde::de::Error::custom("zero")),
                value => Ok(Picky(value)),
            }
        }
    }
    assert!(MethodShape::of::<(Picky,), (), (), ()>().is_none());
}
