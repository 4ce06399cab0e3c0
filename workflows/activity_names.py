"""Activity names: the contract between workflows and the worker's activity classes.

Workflows call activities by these names (with typed inputs and `result_type`), so they
never import activity code; tests may register stand-ins under the same names.
"""

LOAD_RULES = "load_rules"
COMPUTE_DEADLINE = "compute_deadline"
RESUME_DEADLINE = "resume_deadline"
PROJECT_CASE = "project_case"
PROJECT_TASK = "project_task"
PROJECT_CLOCK = "project_clock"
NOTIFY = "notify"
PROJECT_BATCH = "project_batch"
QUOTA_RESERVE = "quota_reserve"
QUOTA_COMMIT = "quota_commit"
QUOTA_RELEASE = "quota_release"
CHECK_VACANCY = "check_vacancy"
RUN_REGISTRY_CHECKS = "run_registry_checks"
CREATE_INVOICE = "create_invoice"
ISSUE_DECISION = "issue_decision"
KANDAS_PROPOSE_SETTLEMENT = "kandas_propose_settlement"
KANDAS_SUPPORT_PACKAGE = "kandas_support_package"
KANDAS_CHECK_IDENTITY = "kandas_check_identity"
KANDAS_CHECK_RECORDS = "kandas_check_records"
KANDAS_SECURITY_CHECK = "kandas_security_check"
KANDAS_REQUEST_VISA = "kandas_request_visa"
DELIVER_WEBHOOKS = "deliver_webhooks"
