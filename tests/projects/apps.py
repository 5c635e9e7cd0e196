from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "tests.projects"
    label = "projects"

    def ready(self):
        from automation.api import register

        register(
            "projects.project",
            fields=["id", "name", "tasks"],
            writable=["name"],
        )
        register(
            "projects.task",
            fields=["id", "project", "title", "status", "due_date", "updated_at"],
            writable=["project", "title", "status", "due_date"],
            organization="project__organization",
        )
