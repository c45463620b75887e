//! The benchmark events: JSON clickstream records of ~285 bytes with 10 columns, the same
//! for every benchmark program that includes this file.

/// One event of ~285 bytes.
pub fn event(i: usize) -> String {
    let actions = ["page_view", "add_to_cart", "checkout", "search"];
    let countries = ["DE", "FR", "US", "JP", "BR"];
    let devices = ["mobile", "desktop", "tablet"];
    format!(
        r#"{{"event_id":"e-{i:09}","user_id":{user},"session_id":"s-{session:012x}","action":"{action}","url":"https://shop.example.com/products/category-{category}/item-{item}?utm_source=newsletter","referrer":"https://www.search.example/?q=item+{item}","country":"{country}","device":"{device}","amount":{amount:.2},"ts":{ts}}}"#,
        user = i % 100_003,
        session = (i / 7).wrapping_mul(2_654_435_761) & 0xffff_ffff_ffff,
        action = actions[i % actions.len()],
        category = i % 40,
        item = i % 9_973,
        country = countries[i % countries.len()],
        device = devices[i % devices.len()],
        amount = (i % 10_000) as f64 / 7.0,
        ts = 1_764_979_200_000_u64 + i as u64,
    )
}
