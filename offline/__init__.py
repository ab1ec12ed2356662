"""Offline side of Kairos: batch recomputation from the offline log, training sets, fine-tuning."""
