"""pgaudit.training"""
