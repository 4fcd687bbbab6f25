-- An erased person (contract 1.1, user.erased): the row stays under its id and version, with
-- the placeholders of the event in place of the personal fields, so no older event brings the
-- person back (consumer::version_rule applies nothing over an erased row); the directory
-- leaves it out.
ALTER TABLE users ADD COLUMN erased_at timestamptz;
