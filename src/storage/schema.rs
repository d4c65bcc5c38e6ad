//! The diesel schema, kept by hand so it stays portable across SQLite and PostgreSQL.

diesel::table! {
    customers (id) {
        id -> BigInt,
        account_number -> Text,
        legal_entity -> Text,
        party_type -> Text,
        is_b2b -> Bool,
        primary_email -> Nullable<Text>,
        email_key -> Nullable<Text>,
        first_name -> Nullable<Text>,
        last_name -> Nullable<Text>,
        origin -> Text,
        active -> Bool,
        creation_key -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    identity_links (id) {
        id -> BigInt,
        issuer -> Text,
        subject -> Text,
        customer_id -> BigInt,
        sign_in_type -> Text,
        identity_provider -> Nullable<Text>,
        email_key -> Text,
        linked_by -> Text,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> Timestamp,
        request_id -> Text,
        actor -> Text,
        source -> Text,
        step -> Nullable<Text>,
        channel -> Nullable<Text>,
        outcome -> Text,
        code -> Nullable<Text>,
        email_key -> Nullable<Text>,
        issuer -> Nullable<Text>,
        subject -> Nullable<Text>,
        account_number -> Nullable<Text>,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    service_credentials (kind) {
        kind -> Text,
        username -> Nullable<Text>,
        secret_hash -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    b2b_prospects (id) {
        id -> BigInt,
        email -> Text,
        email_key -> Text,
        legal_entity -> Text,
        company_name -> Text,
        first_name -> Nullable<Text>,
        last_name -> Nullable<Text>,
        status -> Text,
        requested_by -> Text,
        decided_by -> Nullable<Text>,
        decided_at -> Nullable<Timestamp>,
        decision_reason -> Nullable<Text>,
        organization_id -> Nullable<BigInt>,
        person_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

// SQLite only, in the lookup database beside the main one (src/storage/mod.rs): the audit log's
// lookups by email and identity, keyed by a 64-bit hash.
diesel::table! {
    audit_keys (lookup_key, event_id) {
        lookup_key -> BigInt,
        event_id -> BigInt,
    }
}

diesel::table! {
    audit_lookup_state (singleton) {
        singleton -> BigInt,
        indexed_through -> BigInt,
    }
}

// Migration 000006: the link generation.
diesel::table! {
    link_generation (singleton) {
        singleton -> BigInt,
        n -> BigInt,
    }
}

// Migration 000008: the outbox of webhook events and their deliveries.
diesel::table! {
    event_sequence (singleton) {
        singleton -> BigInt,
        n -> BigInt,
    }
}

diesel::table! {
    webhook_events (position) {
        position -> BigInt,
        event_id -> Text,
        #[sql_name = "type"]
        kind -> Text,
        at -> Timestamp,
        data -> Text,
        email -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> BigInt,
        event_position -> BigInt,
        url -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        next_attempt_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(identity_links -> customers (customer_id));
diesel::joinable!(webhook_deliveries -> webhook_events (event_position));
diesel::allow_tables_to_appear_in_same_query!(
    customers,
    identity_links,
    audit_events,
    audit_keys,
    audit_lookup_state,
    service_credentials,
    b2b_prospects,
    webhook_events,
    webhook_deliveries
);
