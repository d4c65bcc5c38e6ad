use super::*;

fn env() -> Environment {
    let settings = AppSettings::parse(
        Path::new("appsettings.json"),
        r#"{"Environments":[{"Name":"Test","Production":false,"Tenant":"fabrikam.onmicrosoft.com",
            "PolicySettings":{"Url":"https://a.example/x?a=1&b=<2>","Flag":true,"Port":8080,
            "Empty":"","Null":null,"List":[1]}}]}"#,
    )
    .unwrap();
    settings.environments[0].clone()
}

fn message(error: PolicyError) -> String {
    error.to_string()
}

#[test]
fn placeholders_are_replaced_with_escaped_values() {
    let out = render_text(
        Path::new("p.xml"),
        "<a t=\"{Settings:Tenant}\">{Settings:Url}</a>\n<b>{Settings:Flag} {Settings:Port}</b>\n",
        &env(),
    )
    .unwrap();
    assert_eq!(
        out,
        "<a t=\"fabrikam.onmicrosoft.com\">https://a.example/x?a=1&amp;b=&lt;2&gt;</a>\n<b>true 8080</b>\n"
    );
}

#[test]
fn text_without_placeholders_is_unchanged() {
    let text = "<?xml version=\"1.0\"?>\n<a>{OIDC:ClientId} {Culture:RFC5646}</a>";
    assert_eq!(render_text(Path::new("p.xml"), text, &env()).unwrap(), text);
}

#[test]
fn a_placeholder_without_a_value_names_the_file_and_line() {
    let error = render_text(
        Path::new("policies/X.xml"),
        "<a>\n<b>{Settings:Missing}</b>\n</a>",
        &env(),
    )
    .unwrap_err();
    let text = message(error);
    assert!(text.starts_with("policies/X.xml:2: "), "{text}");
    assert!(
        text.contains("{Settings:Missing} has no value in environment \"Test\""),
        "{text}"
    );
}

#[test]
fn empty_null_and_structured_values_are_errors_not_empty_strings() {
    for (name, expected) in [
        ("Empty", "is empty"),
        ("Null", "has no value"),
        ("List", "not a string, number or boolean"),
    ] {
        let text = format!("<a>{{Settings:{name}}}</a>");
        let error = message(render_text(Path::new("p.xml"), &text, &env()).unwrap_err());
        assert!(error.contains(expected), "{name}: {error}");
    }
}

#[test]
fn every_missing_placeholder_is_reported_at_once() {
    let error = render_text(
        Path::new("p.xml"),
        "{Settings:One}\n\n{Settings:Two} {Settings:Tenant}\n",
        &env(),
    )
    .unwrap_err();
    let text = message(error);
    assert!(text.contains("p.xml:1: {Settings:One}"), "{text}");
    assert!(text.contains("p.xml:3: {Settings:Two}"), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn malformed_placeholders_are_errors() {
    for text in [
        "<a>{Settings:</a>",
        "<a>{Settings:has space}</a>",
        "{Settings:}",
    ] {
        let error = message(render_text(Path::new("p.xml"), text, &env()).unwrap_err());
        assert!(error.contains("p.xml:1: malformed placeholder"), "{error}");
    }
}

#[test]
fn an_empty_tenant_is_an_error() {
    let mut env = env();
    env.tenant = " ".into();
    let error = message(render_text(Path::new("p.xml"), "{Settings:Tenant}", &env).unwrap_err());
    assert!(error.contains("{Settings:Tenant} has no value"), "{error}");
}

#[test]
fn an_unknown_environment_lists_the_known_ones() {
    let settings = AppSettings::parse(
        Path::new("policies/appsettings.json"),
        r#"{"Environments":[{"Name":"Test","Tenant":"t"},{"Name":"Production","Tenant":"p"}]}"#,
    )
    .unwrap();
    let error = settings
        .environment(Path::new("policies/appsettings.json"), "Prod")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "environment \"Prod\" is not in policies/appsettings.json (environments: Test, Production)"
    );
}

#[test]
fn settings_errors_name_the_file_and_line() {
    let error = AppSettings::parse(
        Path::new("s.json"),
        "{\n\"Environments\": [\n{\"Name\": 1}]}",
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("s.json:3: not valid settings"),
        "{error}"
    );
    let error = AppSettings::parse(
        Path::new("s.json"),
        r#"{"Environments":[{"Name":"A","Tenant":"t"},{"Name":"A","Tenant":"u"}]}"#,
    )
    .unwrap_err();
    assert!(error.to_string().contains("appears twice"), "{error}");
}

const POLICY_HEAD: &str = r#"<TrustFrameworkPolicy xmlns="http://schemas.microsoft.com/online/cpim/schemas/2013/06" PolicySchemaVersion="0.3.0.0" TenantId="t" PolicyId="P">"#;

#[test]
fn production_refuses_plain_http_and_debug_mode() {
    let text = format!(
        "{POLICY_HEAD}\n<Item Key=\"ServiceUrl\">http://x/b2c/rest/link</Item>\n<Item Key=\"DebugMode\">true</Item>\n</TrustFrameworkPolicy>"
    );
    let mut env = env();
    assert!(check_rendered(Path::new("p.xml"), &text, &env).is_ok());
    env.production = true;
    let error = message(check_rendered(Path::new("p.xml"), &text, &env).unwrap_err());
    assert!(
        error.contains("p.xml:2: ServiceUrl \"http://x/b2c/rest/link\" is not https://"),
        "{error}"
    );
    assert!(error.contains("p.xml:3: DebugMode is true"), "{error}");
}

#[test]
fn rendered_files_must_be_well_formed_policies() {
    let error = message(check_rendered(Path::new("p.xml"), "<a>\n<b></a>", &env()).unwrap_err());
    assert!(error.starts_with("p.xml:2: not well-formed XML"), "{error}");
    let error = message(check_rendered(Path::new("p.xml"), "<a/>", &env()).unwrap_err());
    assert!(error.contains("not a TrustFrameworkPolicy"), "{error}");
}

#[test]
fn render_dir_writes_nothing_when_a_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join(APP_SETTINGS_FILE),
        r#"{"Environments":[{"Name":"Test","Tenant":"fabrikam.onmicrosoft.com","PolicySettings":{}}]}"#,
    )
    .unwrap();
    let good =
        format!("{POLICY_HEAD}</TrustFrameworkPolicy>").replace("\"t\"", "\"{Settings:Tenant}\"");
    std::fs::write(policies.join("A.xml"), &good).unwrap();
    std::fs::write(
        policies.join("B.xml"),
        format!("{POLICY_HEAD}\n{{Settings:Nope}}</TrustFrameworkPolicy>"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let error = message(render_dir(&policies, "Test", None, &out).unwrap_err());
    assert!(
        error.contains("B.xml:2: {Settings:Nope} has no value"),
        "{error}"
    );
    assert!(!out.exists());

    std::fs::remove_file(policies.join("B.xml")).unwrap();
    let rendered = render_dir(&policies, "Test", None, &out).unwrap();
    assert_eq!(rendered.files, vec![out.join("A.xml")]);
    let text = std::fs::read_to_string(out.join("A.xml")).unwrap();
    assert!(
        text.contains("TenantId=\"fabrikam.onmicrosoft.com\""),
        "{text}"
    );

    let error = message(render_dir(&policies, "Test", None, &policies).unwrap_err());
    assert!(error.contains("would overwrite the sources"), "{error}");
    let error = message(render_dir(&policies, "Nope", None, &out).unwrap_err());
    assert!(error.contains("environment \"Nope\" is not in"), "{error}");
}

fn policy(id: &str, base: Option<&str>, body: &str) -> PolicyFile {
    let base = base
        .map(|b| format!("<BasePolicy><TenantId>t</TenantId><PolicyId>{b}</PolicyId></BasePolicy>"))
        .unwrap_or_default();
    let text = format!(
        "{}{base}<ClaimsProviders><ClaimsProvider><TechnicalProfiles>{body}</TechnicalProfiles></ClaimsProvider></ClaimsProviders></TrustFrameworkPolicy>",
        POLICY_HEAD.replace("PolicyId=\"P\"", &format!("PolicyId=\"{id}\""))
    );
    PolicyFile::parse(Path::new(&format!("{id}.xml")), text).unwrap()
}

#[test]
fn a_chain_is_ordered_root_first_whatever_the_file_order() {
    let chain = Chain::from_files(vec![
        policy("C", Some("B"), ""),
        policy("A", None, ""),
        policy("B", Some("A"), ""),
    ])
    .unwrap();
    let ids: Vec<&str> = chain.layers.iter().map(|l| l.policy_id.as_str()).collect();
    assert_eq!(ids, ["A", "B", "C"]);
}

#[test]
fn broken_chains_are_errors() {
    let error = message(
        Chain::from_files(vec![policy("A", None, ""), policy("B", Some("Z"), "")]).unwrap_err(),
    );
    assert!(error.contains("do not form one chain"), "{error}");
    let error = message(Chain::from_files(vec![policy("B", Some("Z"), "")]).unwrap_err());
    assert!(
        error.contains("its base policy Z is not among the files"),
        "{error}"
    );
    let error =
        message(Chain::from_files(vec![policy("A", None, ""), policy("A", None, "")]).unwrap_err());
    assert!(error.contains("policy id A is also the id of"), "{error}");
}

#[test]
fn technical_profiles_merge_across_layers_and_includes() {
    let chain = Chain::from_files(vec![
        policy(
            "Base",
            None,
            r#"<TechnicalProfile Id="Common"><Protocol Name="Proprietary" Handler="Web.TPEngine.Providers.RestfulProvider, Web.TPEngine"/>
               <Metadata><Item Key="AuthenticationType">Basic</Item><Item Key="SendClaimsIn">Body</Item></Metadata>
               <InputClaims><InputClaim ClaimTypeReferenceId="clientId" DefaultValue="{OIDC:ClientId}" AlwaysUseDefaultValue="true"/></InputClaims></TechnicalProfile>
               <TechnicalProfile Id="Page"><ValidationTechnicalProfiles><ValidationTechnicalProfile ReferenceId="Write"/></ValidationTechnicalProfiles></TechnicalProfile>"#,
        ),
        policy(
            "Ext",
            Some("Base"),
            r#"<TechnicalProfile Id="Call"><Metadata><Item Key="ServiceUrl">https://x/link</Item><Item Key="AuthenticationType">Bearer</Item></Metadata>
               <InputClaims><InputClaim ClaimTypeReferenceId="signInNames.emailAddress" PartnerClaimType="email"/><InputClaim ClaimTypeReferenceId="ClientID"/></InputClaims>
               <OutputClaims><OutputClaim ClaimTypeReferenceId="customerAccountNumber"/></OutputClaims>
               <IncludeTechnicalProfile ReferenceId="Common"/></TechnicalProfile>
               <TechnicalProfile Id="Page"><ValidationTechnicalProfiles><ValidationTechnicalProfile ReferenceId="Check"/></ValidationTechnicalProfiles></TechnicalProfile>"#,
        ),
    ])
    .unwrap();
    let call = chain.technical_profile("Call").unwrap().unwrap();
    assert!(call.is_restful());
    assert_eq!(call.metadata("AuthenticationType"), Some("Bearer"));
    assert_eq!(call.metadata("SendClaimsIn"), Some("Body"));
    assert_eq!(call.metadata("ServiceUrl"), Some("https://x/link"));
    let sent: Vec<&str> = call
        .input_claims
        .iter()
        .map(ClaimRef::partner_name)
        .collect();
    // ClientID overrides clientId (claim types ignore case) in place.
    assert_eq!(sent, ["ClientID", "email"]);
    assert!(!call.input_claims[0].always_use_default_value);
    assert_eq!(call.defined_in, ["Ext"]);
    let page = chain.technical_profile("Page").unwrap().unwrap();
    assert_eq!(page.validation_technical_profiles, ["Check", "Write"]);
    assert!(chain.technical_profile("Nope").unwrap().is_none());
    assert_eq!(
        chain.technical_profile_ids().unwrap(),
        ["Common", "Page", "Call"]
    );
}

#[test]
fn include_loops_and_dangling_includes_are_errors() {
    let chain = Chain::from_files(vec![policy(
        "Base",
        None,
        r#"<TechnicalProfile Id="A"><IncludeTechnicalProfile ReferenceId="B"/></TechnicalProfile>
           <TechnicalProfile Id="B"><IncludeTechnicalProfile ReferenceId="A"/></TechnicalProfile>
           <TechnicalProfile Id="C"><IncludeTechnicalProfile ReferenceId="Z"/></TechnicalProfile>"#,
    )])
    .unwrap();
    assert!(message(chain.technical_profile("A").unwrap_err()).contains("includes it again"));
    assert!(message(chain.technical_profile("C").unwrap_err()).contains("which no layer defines"));
}
