# Issue 19: the SEND_EMAIL action type (choices only: no database change), and the run log's
# run_uuid (the webhook Idempotency-Key). The logs table can be large,
# so the column is added without a default in the database: a nullable column without default is
# a catalog change on PostgreSQL and a plain ALTER TABLE ADD COLUMN on SQLite (with a default,
# Django would rebuild the SQLite table and give every old row the same value). New rows get
# their UUID from the model's default, in Python; old ones keep NULL (AutomationLog.run_key()
# derives theirs).

import uuid

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('automation', '0002_rule_webhook_trigger'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AddField(
                    model_name='automationlog',
                    name='run_uuid',
                    field=models.UUIDField(blank=True, editable=False, null=True),
                ),
            ],
            state_operations=[
                migrations.AddField(
                    model_name='automationlog',
                    name='run_uuid',
                    field=models.UUIDField(
                        blank=True, default=uuid.uuid4, editable=False, null=True
                    ),
                ),
            ],
        ),
        migrations.AlterField(
            model_name='ruleaction',
            name='action_type',
            field=models.CharField(
                choices=[
                    ('CREATE_RECORD', 'Create a record'),
                    ('UPDATE_RECORD', 'Update a record'),
                    ('DELETE_RECORD', 'Delete a record'),
                    ('SEND_NOTIFICATION', 'Send a notification'),
                    ('CALL_WEBHOOK', 'Call a webhook'),
                    ('SEND_EMAIL', 'Send an e-mail'),
                ],
                max_length=20,
            ),
        ),
    ]
