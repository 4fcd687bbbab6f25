-- An erased clinician (contract 1.1, user.erased): the row stays under its id and version with
-- the event's placeholders, so their appointments (a clinical record) keep the pseudonymous id
-- and show "former clinician"; consumer::version_rule applies nothing over it again.
ALTER TABLE clinicians ADD COLUMN erased_at timestamptz;
