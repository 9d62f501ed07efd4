"""pgaudit.fapa"""
