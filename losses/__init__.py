"""Loss functions: ``from losses import heteroscedastic_nll, batch_r2, varying_r2, coral_loss, l2sp_penalty``."""
from losses.loss_function import batch_r2, coral_loss, heteroscedastic_nll, l2sp_penalty, varying_r2

__all__ = ["heteroscedastic_nll", "batch_r2", "varying_r2", "coral_loss", "l2sp_penalty"]
