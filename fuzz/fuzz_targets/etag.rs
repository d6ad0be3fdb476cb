//! Entity-tags and entity-tag lists: never panic, and a parsed tag prints back to a value that
//! parses to the same tag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rangecache_core::validators::{EntityTag, EtagList};

fuzz_target!(|value: &str| {
    if let Some(tag) = EntityTag::parse(value) {
        assert_eq!(EntityTag::parse(&tag.to_string()), Some(tag.clone()), "{value:?}");
        assert!(tag.weak_eq(&tag));
        assert_eq!(tag.strong_eq(&tag), tag.is_strong());
    }
    if let Some(EtagList::Tags(tags)) = EtagList::parse(value) {
        assert!(!tags.is_empty(), "{value:?}");
        let printed: Vec<String> = tags.iter().map(ToString::to_string).collect();
        assert_eq!(EtagList::parse(&printed.join(", ")), Some(EtagList::Tags(tags)), "{value:?}");
    }
});
