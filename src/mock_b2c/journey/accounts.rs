//! Local and social accounts: sign-up and sign-in up to the directory write.

use crate::mock_b2c::directory::User;
use crate::mock_b2c::policy::{LOCAL_SIGN_UP_PAGE, SOCIAL_SIGN_UP_PAGE};
use crate::mock_b2c::types::Outcome;

use super::{
    apply_attribute_overrides, Journey, Mode, Step, DEFAULT_PASSWORD, DIRECTORY_DOWN, NO_ACCOUNT,
    NO_SESSION, USER_EXISTS, VERIFY_FIRST, WRONG_PASSWORD,
};

impl Journey<'_> {
    pub(super) async fn local_sign_up(&mut self) -> Step<()> {
        if self.tenant.settings.local_email_verification
            && !self.request.complete_email_verification
        {
            return self.stop(Outcome::ValidationError, VERIFY_FIRST, None);
        }
        let email = self.request.email.trim().to_string();
        let user = User {
            object_id: uuid::Uuid::new_v4().to_string(),
            sign_in_email: Some(email.clone()),
            password_hash: match crate::auth::hash_secret(&self.password()) {
                Ok(hash) => Some(hash),
                Err(error) => {
                    log::warn!("mock B2C: the password was not hashed: {error}");
                    return self.stop(Outcome::Error, DIRECTORY_DOWN, None);
                }
            },
            provider: None,
            provider_subject: None,
            email: email.clone(),
            email_verified: None,
            given_name: self.request.given_name.clone(),
            surname: self.request.surname.clone(),
            external_tenant: None,
        };
        let user = match self.before_local_write(user).await {
            Step::Go(user) => user,
            Step::Stop => return Step::Stop,
        };
        self.create_then_token(user).await
    }

    pub(super) async fn local_sign_in(&mut self) -> Step<()> {
        let Some(user) = self.tenant.directory.local(&self.request.email) else {
            if self.request.single_sign_on {
                return self.stop(Outcome::Error, NO_SESSION, None);
            }
            return self.stop(Outcome::ValidationError, NO_ACCOUNT, None);
        };
        if self.request.single_sign_on {
            // B2C's session stands for the password typed at the earlier sign-in.
            self.result.object_id = Some(user.object_id.clone());
            return self.before_token(&user).await;
        }
        if !user.has_password(&self.password()) {
            return self.stop(Outcome::ValidationError, WRONG_PASSWORD, None);
        }
        self.result.object_id = Some(user.object_id.clone());
        self.before_token(&user).await
    }

    fn password(&self) -> String {
        self.request
            .password
            .clone()
            .unwrap_or_else(|| DEFAULT_PASSWORD.into())
    }

    /// The checks on the local sign-up page, before the directory write.
    async fn before_local_write(&mut self, mut user: User) -> Step<User> {
        match self.mode() {
            Mode::UserFlow => {
                let body = self.connector_body("PostAttributeCollection", &user, None);
                match self.connector("PostAttributeCollection", body).await {
                    Step::Go(claims) => {
                        apply_attribute_overrides(&mut user, &claims);
                        Step::Go(user)
                    }
                    Step::Stop => Step::Stop,
                }
            }
            Mode::CustomPolicy => {
                let mut bag = self.page_bag(&user);
                match self.validate_page(LOCAL_SIGN_UP_PAGE, &mut bag).await {
                    Step::Go(()) => Step::Go(user),
                    Step::Stop => Step::Stop,
                }
            }
        }
    }

    pub(super) async fn social(&mut self) -> Step<()> {
        let (name, subject, verified) = match &self.provider {
            Some(p) => (p.name.clone(), p.subject.clone(), p.email_verified),
            None => return self.stop(Outcome::Error, "no identity provider", None),
        };
        if let Some(user) = self.tenant.directory.social(&name, &subject) {
            // Sign-in: the provider answered again, with what it says today (under single
            // sign-on it was not asked, and the session stands for it).
            let mut user = user;
            user.email_verified = verified;
            self.result.object_id = Some(user.object_id.clone());
            return self.before_token(&user).await;
        }
        if self.request.single_sign_on {
            return self.stop(Outcome::Error, NO_SESSION, None);
        }
        let email = self.request.email.trim().to_string();
        let mut user = User {
            object_id: uuid::Uuid::new_v4().to_string(),
            sign_in_email: None,
            password_hash: None,
            provider: Some(name),
            provider_subject: Some(subject),
            email,
            email_verified: verified,
            given_name: self.request.given_name.clone(),
            surname: self.request.surname.clone(),
            external_tenant: None,
        };
        match self.mode() {
            Mode::UserFlow => {
                // After the provider returns, before the attribute page.
                let body = self.connector_body("PostFederationSignup", &user, None);
                match self.connector("PostFederationSignup", body).await {
                    Step::Go(claims) => apply_attribute_overrides(&mut user, &claims),
                    Step::Stop => return Step::Stop,
                }
                // The attribute page, submitted.
                let body = self.connector_body("PostAttributeCollection", &user, None);
                match self.connector("PostAttributeCollection", body).await {
                    Step::Go(claims) => apply_attribute_overrides(&mut user, &claims),
                    Step::Stop => return Step::Stop,
                }
            }
            Mode::CustomPolicy => {
                let mut bag = self.page_bag(&user);
                if let Step::Stop = self.validate_page(SOCIAL_SIGN_UP_PAGE, &mut bag).await {
                    return Step::Stop;
                }
            }
        }
        self.create_then_token(user).await
    }

    /// Writes the new user to the directory (refused when the account exists), then goes on to
    /// the token.
    async fn create_then_token(&mut self, user: User) -> Step<()> {
        let user = match self.tenant.directory.create(user) {
            Ok(Some(user)) => user,
            Ok(None) => return self.stop(Outcome::ValidationError, USER_EXISTS, None),
            Err(error) => {
                log::warn!("mock B2C: {error}");
                return self.stop(Outcome::Error, DIRECTORY_DOWN, None);
            }
        };
        self.result.account_created = true;
        self.result.object_id = Some(user.object_id.clone());
        self.before_token(&user).await
    }
}
