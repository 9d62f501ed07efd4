"""pgaudit.data"""
