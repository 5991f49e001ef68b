"""PostgreSQL refuses any UPDATE of a model version's row: versions are immutable even to a
queryset update or raw SQL (the model's save refuses too, on every database)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION predictions_modelversion_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'model version % is immutable', OLD.id USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER predictions_modelversion_no_update BEFORE UPDATE ON predictions_modelversion
    FOR EACH ROW EXECUTE FUNCTION predictions_modelversion_immutable();
"""
DROP = """
DROP TRIGGER IF EXISTS predictions_modelversion_no_update ON predictions_modelversion;
DROP FUNCTION IF EXISTS predictions_modelversion_immutable();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("predictions", "0001_risk_model_versions_scores_runs")]

    operations = [migrations.RunPython(forwards, backwards)]
