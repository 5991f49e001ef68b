from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    name = "predictions"
    verbose_name = "Predictions"

    def ready(self) -> None:
        # The tasks are registered with Celery in every process (beat names them by string).
        import predictions.tasks  # noqa: F401
        from predictions.receivers import rescore_changed_records
        from registry.signals import records_changed

        records_changed.connect(rescore_changed_records,
                                dispatch_uid="predictions.rescore_changed_records")
